"""`slt-deploy bench`: latency, throughput and memory of artifacts, side by side.

Runners share one protocol (activate → infer → deactivate, as Polygraphy's do); the timing
loop, the memory probe and the machine record are written once, outside them."""
