# The repo root is on sys.path because this file lives here; that makes the e2e plugin importable.
pytest_plugins = ["e2e.pytest_plugin"]
