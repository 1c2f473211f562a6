"""The stream process (`manage.py copier_listen`): one asyncio loop that keeps every copied
account's broker stream open and hands each batch of events to the services
(copier.services.stream_events), which route them to ingestion and the order rows."""
