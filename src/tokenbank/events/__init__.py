"""Events and their delivery to apps (decision 15): the outbox the database fills,
webhook endpoints, and the deliveries ``tokenbank jobs run`` makes."""
