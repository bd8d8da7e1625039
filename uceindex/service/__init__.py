"""The HTTP service: `create_app(store_uri, token=...)`, served by `uceindex serve`."""
