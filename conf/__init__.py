"""Package data, not code: Relayflow's default configuration files.

`conf/model/*.yaml` are the model files loaded by default and `conf/model/templates/` one
template per protocol. They are found with `importlib.resources` (`engine.settings.package_data`),
in a checkout and in an installed wheel alike; RELAYFLOW_CONF_DIR / RELAYFLOW_MODEL_DIR name
other folders. Nothing here is imported for its code.
"""
