"""A Pusher that also keeps TF Serving's models.config in step with the pushed models."""
