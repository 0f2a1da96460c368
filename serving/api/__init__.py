"""The HTTP API: a router per resource, the request and response models, the API-key guard and the audit rows."""
