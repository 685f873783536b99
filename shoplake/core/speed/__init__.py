"""The speed tables' rows and how they are read, and the speed layer's progress on Kafka."""
