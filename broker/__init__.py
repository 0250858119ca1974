"""The task-queue broker: one asyncio process per node (see docs/architecture.md)."""
