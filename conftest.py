# Load the plugin from a source checkout even before `pip install -e .` has run; once
# installed, the pytest11 entry point registers the same module under the same name.
pytest_plugins = ["harness.plugin"]
