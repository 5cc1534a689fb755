"""Logs: CloudWatch log groups by name, and subscription filters that send a function's matching
output lines to a Firehose stream, shaped as the stream's processors would leave them.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from shelfwise_local.runtime import logfilters
from shelfwise_local.runtime.base import LogSubscription, Resource, RuntimeBase
from shelfwise_local.runtime.functions import FunctionSpec, Invocation
from shelfwise_local.runtime.template import physical_id


class LogSubscriptions(RuntimeBase):
    """Log groups, subscription filters and their delivery to Firehose."""

    def _create_aws_logs_loggroup(self, lid: str, props: dict[str, Any]) -> Resource:
        # Nothing to create: a function's output is captured in process. The name matters, since
        # subscription filters name the log group they read (/aws/lambda/<function name>).
        name = props.get("LogGroupName") or physical_id(self.stack_name, lid)
        arn = f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{name}:*"
        return Resource(lid, "AWS::Logs::LogGroup", name, {"Arn": arn})

    def _create_aws_logs_subscriptionfilter(self, lid: str, props: dict[str, Any]) -> Resource:
        """Lines of the log group's function that match the pattern go to the Firehose stream.

        Delivered at the next pump (as Firehose delivers after its buffer interval), shaped as the
        stream's processors would leave them: with Decompression + CloudWatchLogProcessing
        (DataMessageExtraction) each message is one record (plus a newline with
        AppendDelimiterToRecord); otherwise the CloudWatch Logs envelope, gzip'd unless decompressed.
        """
        res = Resource(lid, "AWS::Logs::SubscriptionFilter", props.get("FilterName") or lid, {})
        group, pattern = str(props.get("LogGroupName", "")), str(props.get("FilterPattern", ""))
        dest = str(props.get("DestinationArn", ""))
        if ":firehose:" not in dest or "deliverystream/" not in dest:
            self._warn(
                f"{lid}: only Firehose destinations are emulated for subscription filters; {dest} gets nothing"
            )
            res.emulated = False
            return res
        try:
            matches = logfilters.compile_pattern(pattern)
        except logfilters.UnsupportedPatternError as exc:
            self._warn(f"{lid}: filter pattern not emulated ({exc}); no log events are delivered")
            res.emulated = False
            return res
        conf: dict[str, Any] = {}
        for r in self.resources.values():
            if r.type == "AWS::KinesisFirehose::DeliveryStream" and r.attrs.get("Arn") == dest:
                conf = r.props.get("ExtendedS3DestinationConfiguration") or {}
        processing = conf.get("ProcessingConfiguration") or {}
        enabled = str(processing.get("Enabled", True)).lower() != "false"
        processors = (processing.get("Processors") or []) if enabled else []
        types = [str(p.get("Type")) for p in processors]
        extract = any(
            p.get("Type") == "CloudWatchLogProcessing"
            and any(
                q.get("ParameterName") == "DataMessageExtraction"
                and str(q.get("ParameterValue")).lower() == "true"
                for q in p.get("Parameters") or []
            )
            for p in processors
        )
        stream = dest.rsplit("deliverystream/", 1)[1]
        self._subscriptions.append(LogSubscription(res.ref, group, matches, stream, types, extract))
        return res

    def _on_output(self, spec: FunctionSpec, inv: Invocation) -> None:
        """A function's output lines -> the subscription filters of its log group."""
        group = f"/aws/lambda/{spec.name}"
        subs = [s for s in self._subscriptions if s.log_group == group]
        if not subs:
            return
        lines = inv.stdout.splitlines()
        ts = int(inv.started * 1000)
        for sub in subs:
            events = [
                {"id": f"{inv.request_id}-{i}", "timestamp": ts, "message": line}
                for i, line in enumerate(lines)
                if line.strip() and sub.matches(line)
            ]
            if events:
                with self._log_lock:
                    self._log_batches.append((sub, events))

    def flush_subscriptions(self) -> int:
        """Deliver the log events matched so far to their Firehose streams; returns records put."""
        with self._log_lock:
            batches, self._log_batches = self._log_batches, []
        if not batches:
            return 0
        by_stream: dict[str, list[bytes]] = {}
        for sub, events in batches:
            records = by_stream.setdefault(sub.stream, [])
            delimiter = b"\n" if "AppendDelimiterToRecord" in sub.processors else b""
            if sub.extract_messages and "Decompression" in sub.processors:
                records.extend(e["message"].encode("utf-8", "surrogatepass") + delimiter for e in events)
                continue
            envelope = json.dumps(
                {
                    "messageType": "DATA_MESSAGE",
                    "owner": self.account_id,
                    "logGroup": sub.log_group,
                    "logStream": "local/[$LATEST]shelfwise",
                    "subscriptionFilters": [sub.name],
                    "logEvents": events,
                }
            ).encode()
            records.append(
                envelope + delimiter if "Decompression" in sub.processors else gzip.compress(envelope)
            )
        firehose = self.client("firehose")
        put = 0
        for stream, records in by_stream.items():
            # PutRecordBatch limits: 500 records and 4 MiB per call.
            start = 0
            while start < len(records):
                end, size = start, 0
                while end < len(records) and end - start < 500 and size + len(records[end]) <= 4 << 20:
                    size += len(records[end])
                    end += 1
                end = max(end, start + 1)
                resp = firehose.put_record_batch(
                    DeliveryStreamName=stream, Records=[{"Data": r} for r in records[start:end]]
                )
                if resp.get("FailedPutCount"):
                    self._warn(f"subscription delivery to {stream}: {resp['FailedPutCount']} records failed")
                put += end - start
                start = end
        return put
