"""A Pusher that also keeps TF Serving's models.config in step with the pushed models."""

from components.serving_pusher.component import ServingPusher  # noqa: F401
