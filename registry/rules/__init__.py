"""The rules: events and signatures, policy and gates, decisions, governance, the guard,
commands, reports as text, the record read, the data types, the settings. Pure: no I/O."""
