"""Test handler that accepts any event (SNS, EventBridge) and returns a summary of it."""


def lambda_handler(event, context):
    if "Records" in event:
        return {
            "kind": "records",
            "sources": [r.get("EventSource") or r.get("eventSource") for r in event["Records"]],
        }
    return {"kind": "event", "detail_type": event.get("detail-type"), "source": event.get("source")}
