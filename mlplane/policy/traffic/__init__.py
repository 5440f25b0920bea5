"""The traffic plane's policy core: parse an inference request, pick a model-server endpoint
(filters -> weighted scorers -> picker, in the model of the Gateway API Inference Extension's
endpoint picker), and decide admission under saturation (flow control). Pure: no I/O, no clock."""
