DROP TABLE machine_events;
