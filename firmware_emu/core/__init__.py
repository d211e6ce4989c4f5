"""The sans-IO device core every device type shares: identity, security policy, dispatch, state, time."""
