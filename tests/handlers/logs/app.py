"""Test handler: prints the event's ``lines`` to stdout, one per line (the function's log group)."""


def lambda_handler(event, context):
    for line in event.get("lines", []):
        print(line)
    return {"printed": len(event.get("lines", []))}
