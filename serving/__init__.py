"""Serving: reads exported SavedModels only; never imports models/."""
