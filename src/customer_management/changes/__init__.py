"""The change stream: the broker that reads the outbox in commit order, WatchEvents,
hub subscriptions and their webhook delivery, and event retention. It reads resources
through the domain and events through the store; nothing below imports it."""
