"""One config file per experiment; each defines ``get_config()`` returning a dict."""
