# This folder is installed as the package `nas.spaces` (see pyproject.toml), so the space files
# ship with nas and work after a non-editable install. Add a space by adding a .toml file.
