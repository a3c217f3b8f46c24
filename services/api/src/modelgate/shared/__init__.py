"""What every worker of every replica shares through Redis: the prediction cache, client
quotas, the fleet-wide reload channel, and the connection and circuit breaker they use."""
