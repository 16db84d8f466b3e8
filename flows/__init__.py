"""Prefect flows of the dore lifecycle (`flows/train.py`; deployments in prefect.yaml)."""
