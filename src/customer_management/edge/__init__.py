"""What both front doors (the gRPC API and the REST gateway) share: which scope each
method needs and whether it changes anything, who the caller is, and acting as that
caller for the length of one call."""
