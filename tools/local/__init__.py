"""The local stack's Python side: its resources made from template.yaml, invoking the functions
(locally or on AWS) and the nightly's run summary."""
