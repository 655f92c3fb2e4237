from registry_tools.cli import run

run()
