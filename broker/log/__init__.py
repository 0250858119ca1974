"""The replicated (or local) log that feeds the state machine. See :mod:`broker.log.base`."""
