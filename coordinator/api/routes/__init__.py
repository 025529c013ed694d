"""The REST API's routers, one per resource; coordinator/api/app.py includes them."""
