"""Delivering events: SQS event sources, S3 / SNS / EventBridge notifications to functions (through
internal queues the runtime polls), schedules on the runtime's clock, runtime-originated events, HTTP.

``pump`` delivers what is pending now; ``advance`` moves the clock and fires what falls due in order.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
import uuid
from typing import Any

from shelfwise_local.runtime import patterns, targets
from shelfwise_local.runtime.base import Poller, RuleSchedule, RuntimeBase, log
from shelfwise_local.runtime.clock import iso
from shelfwise_local.runtime.functions import Invocation


class Delivery(RuntimeBase):
    """Moves events from their sources to functions and targets."""

    # --- pump and clock
    def pump(self, max_rounds: int = 1000, *, settle: bool | float = True) -> int:
        """Deliver everything pending now: queue messages and notifications; returns the count.

        An emulator that delivers asynchronously (LocalStack's S3 -> SQS, SNS -> SQS, EventBridge
        -> SQS) may not show a message yet: with ``settle``, a quiet round is re-polled for up to
        ``self.settle`` seconds (or the float given) before the pump calls it done.
        """
        window = self.settle if settle is True else float(settle or 0.0)
        delivered = 0
        with self._lock:
            self.flush_metrics()
            self.flush_subscriptions()
            for _ in range(max_rounds):
                self._release_redeliveries()
                n = self._poll_all()
                deadline = time.monotonic() + window
                while not n and time.monotonic() < deadline:
                    time.sleep(min(0.2, window))
                    n = self._poll_all()
                delivered += n
                if not n:
                    break
        return delivered

    def advance(self, seconds: float) -> int:
        """Move the clock forward, firing schedules, alarm evaluations and redeliveries in order."""
        with self._lock:
            return self._run_until(self.clock.now() + seconds)

    def run_pending(self) -> int:
        """Everything due up to the clock's current time (``local up`` calls this every second)."""
        with self._lock:
            return self._run_until(self.clock.now())

    def _run_until(self, target: float) -> int:
        count = self.pump()
        while True:
            due = self._next_due()
            if due is None or due > target:
                break
            if not self.clock.follow_wall:
                self.clock.set(max(due, self.clock.now()))
            fired = self._fire_due(due)
            redelivered = self._release_redeliveries()
            # Only work done (a schedule fired, an alarm changed, a message released) can have
            # queued something; an alarm round without changes leaves nothing to deliver.
            if fired or redelivered:
                count += fired + self.pump(settle=min(self.settle, 0.5))
        if not self.clock.follow_wall and target > self.clock.now():
            self.clock.set(target)
        return count + self.pump(settle=False)

    def _next_due(self) -> float | None:
        times = [s.next_fire for s in self._schedules if s.next_fire is not None]
        times += [t for t, _, _ in self._redeliver]
        if (self.evaluator.alarms or self.evaluator.composites) and self._next_alarm_eval is not None:
            times.append(self._next_alarm_eval)
        return min(times) if times else None

    def _fire_due(self, due: float) -> int:
        count = 0
        for s in sorted(self._schedules, key=lambda s: s.next_fire or 0):
            if s.next_fire is not None and s.next_fire <= due:
                fired_at = s.next_fire
                s.next_fire = s.schedule.next_after(fired_at, s.created)
                for target in s.targets:
                    self._deliver_scheduled(s, target, fired_at)
                    count += 1
        if self._next_alarm_eval is not None and self._next_alarm_eval <= due:
            self.flush_metrics()
            t = self._next_alarm_eval
            self._next_alarm_eval = t + 60.0
            for change in self.evaluator.evaluate(t):
                self._on_alarm_change(change)
                count += 1
        return count

    # --- targets and asynchronous invocation
    def _deliver_scheduled(self, s: RuleSchedule, target: dict[str, Any], at: float) -> None:
        if s.kind == "scheduler":
            event = targets.scheduler_target_input(target, schedule_arn=s.rule_arn, scheduled_time=iso(at))
        else:
            scheduled = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": self.account_id,
                "time": iso(at),
                "region": self.region,
                "resources": [s.rule_arn],
                "detail": {},
            }
            event = targets.rule_target_input(
                target, scheduled, rule_arn=s.rule_arn, rule_name=s.name, ingestion_time=iso(at)
            )
        self._deliver_to_target(target["Arn"], event)

    def _deliver_to_target(self, arn: str, event: Any) -> None:
        if ":lambda:" in arn:
            self._invoke_async(arn, event)
        elif ":sqs:" in arn:
            url, _ = self._queue_for_arn(arn)
            self.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(event))
        elif ":sns:" in arn:
            self.client("sns").publish(TopicArn=arn, Message=json.dumps(event))
        else:
            self._warn(f"target {arn} is not delivered locally")

    def _invoke_async(self, function: str, event: Any, retries: int = 2) -> Invocation:
        """An asynchronous invocation: Lambda retries a failed one twice, then drops it."""
        inv = self.host.invoke(function, event)
        for _ in range(retries):
            if inv.ok:
                break
            inv = self.host.invoke(function, event)
        if not inv.ok:
            self.async_failures.append(inv)
            log.warning("async invocation of %s failed: %s", function, inv.error)
        return inv

    def _release_redeliveries(self) -> int:
        now = self.clock.now()
        due = [r for r in self._redeliver if r[0] <= now]
        self._redeliver = [r for r in self._redeliver if r[0] > now]
        sqs = self.client("sqs")
        for _, url, handle in due:
            with contextlib.suppress(Exception):  # a handle may be stale if the emulator redelivered
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        return len(due)

    # --- queue pollers: SQS event sources, S3 / SNS / EventBridge notifications
    def _poll_all(self) -> int:
        count = 0
        for poller in list(self._pollers):
            if poller.enabled:
                count += self._poll(poller)
        return count

    def _receive(self, url: str, limit: int) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        messages: list[dict[str, Any]] = []
        while len(messages) < limit:
            resp = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, limit - len(messages)),
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch = resp.get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        return messages

    def _poll(self, p: Poller) -> int:
        messages = self._receive(p.queue_url, p.batch_size if p.kind == "sqs" else 10)
        if not messages:
            return 0
        sqs = self.client("sqs")
        if p.kind == "sqs":
            self._deliver_sqs_batch(p, messages)
            return len(messages)
        for m in messages:
            body = json.loads(m["Body"])
            if p.kind == "s3":
                if body.get("Event") == "s3:TestEvent":
                    pass  # AWS sends the test event to queues only, never to a function
                else:
                    self._invoke_async(p.function, body)
            elif p.kind == "sns":
                self._invoke_async(p.function, self._sns_event(body, p))
            elif p.kind == "events":
                if patterns.matches(p.meta["pattern"], body):
                    payload = targets.rule_target_input(
                        p.meta["target"],
                        body,
                        rule_arn=p.meta["arn"],
                        rule_name=p.meta["rule"],
                        ingestion_time=iso(self.clock.now()),
                    )
                    self._invoke_async(p.function, payload)
                else:
                    log.warning(
                        "emulator routed an event that does not match rule %s; dropped", p.meta["rule"]
                    )
            sqs.delete_message(QueueUrl=p.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    def _deliver_sqs_batch(self, p: Poller, messages: list[dict[str, Any]]) -> None:
        """An SQS event source mapping: one batch, then delete / keep per the response."""
        records = [self._sqs_record(m, p.queue_arn) for m in messages]
        inv = self.host.invoke(p.function, {"Records": records})
        sqs = self.client("sqs")
        by_id = {m["MessageId"]: m for m in messages}
        failed: set[str]
        if not inv.ok:
            failed = set(by_id)
        elif p.report_failures and isinstance(inv.payload, dict) and inv.payload.get("batchItemFailures"):
            ids = [
                f.get("itemIdentifier") if isinstance(f, dict) else None
                for f in inv.payload["batchItemFailures"]
            ]
            # An empty or unknown identifier fails the whole batch, as Lambda does.
            failed = set(by_id) if any(i not in by_id for i in ids) else set(ids)  # type: ignore[arg-type]
        else:
            failed = set()
        ok = [m for mid, m in by_id.items() if mid not in failed]
        for i in range(0, len(ok), 10):
            chunk = ok[i : i + 10]
            sqs.delete_message_batch(
                QueueUrl=p.queue_url,
                Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)],
            )
        when = self.clock.now() + p.visibility_timeout
        for mid in failed:
            self._redeliver.append((when, p.queue_url, by_id[mid]["ReceiptHandle"]))

    def _sqs_record(self, m: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        attrs = {k: v for k, v in m.get("Attributes", {}).items()}
        msg_attrs = {}
        for k, v in (m.get("MessageAttributes") or {}).items():
            msg_attrs[k] = {
                "stringValue": v.get("StringValue"),
                "binaryValue": base64.b64encode(v["BinaryValue"]).decode() if "BinaryValue" in v else None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": v.get("DataType"),
            }
        return {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": attrs,
            "messageAttributes": msg_attrs,
            "md5OfBody": m.get("MD5OfBody", hashlib.md5(m["Body"].encode()).hexdigest()),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": self.region,
        }

    def _sns_event(self, envelope: dict[str, Any], p: Poller) -> dict[str, Any]:
        attrs = {
            k: {"Type": v.get("Type"), "Value": v.get("Value")}
            for k, v in (envelope.get("MessageAttributes") or {}).items()
        }
        return {
            "Records": [
                {
                    "EventSource": "aws:sns",
                    "EventVersion": "1.0",
                    "EventSubscriptionArn": p.meta["sub"],
                    "Sns": {
                        "Type": envelope.get("Type", "Notification"),
                        "MessageId": envelope.get("MessageId", str(uuid.uuid4())),
                        "TopicArn": envelope.get("TopicArn", p.meta["topic"]),
                        "Subject": envelope.get("Subject"),
                        "Message": envelope.get("Message", ""),
                        "Timestamp": envelope.get("Timestamp", iso(self.clock.now())),
                        "SignatureVersion": envelope.get("SignatureVersion", "1"),
                        "Signature": envelope.get("Signature", "local"),
                        "SigningCertUrl": envelope.get("SigningCertURL", ""),
                        "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
                        "MessageAttributes": attrs,
                    },
                }
            ]
        }

    # --- EventBridge (runtime-originated events)
    def put_event(
        self, source: str, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None
    ) -> int:
        """Publish an AWS-originated event (e.g. an alarm state change) to the default bus's rules.

        Matching is the runtime's own (emulators refuse or ignore ``aws.*`` sources); returns the
        number of targets it reached.
        """
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self.account_id,
            "time": iso(self.clock.now()),
            "region": self.region,
            "resources": resources or [],
            "detail": detail,
        }
        reached = 0
        for rule in self._pattern_rules:
            if rule.bus == "default" and patterns.matches(rule.pattern, event):
                for t in rule.targets:
                    payload = targets.rule_target_input(
                        t, event, rule_arn=rule.arn, rule_name=rule.name, ingestion_time=event["time"]
                    )
                    self._deliver_to_target(str(t["Arn"]), payload)
                    reached += 1
        return reached

    # --- HTTP API
    def _invoke_for_api(self, function: str, event: dict[str, Any]) -> Invocation:
        return self.host.invoke(function, event)
