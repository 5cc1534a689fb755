"""Test handler for schedules: returns what it was given and when (per its context)."""


def lambda_handler(event, context):
    return {"event": event, "function": context.function_name}
