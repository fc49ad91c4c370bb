pytest_plugins = ["support.cluster"]
