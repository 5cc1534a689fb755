"""The local runtime: template.yaml run in this process against moto server or LocalStack.

``LocalRuntime`` is the API the e2e tests, the demo and ``shelfwise local`` use; see
docs/local-runtime.md for what it emulates and how.
"""

from shelfwise_local.runtime.alarms import AlarmEvaluator, StateChange
from shelfwise_local.runtime.clock import Clock, Schedule
from shelfwise_local.runtime.emulator import Emulator, EmulatorError
from shelfwise_local.runtime.functions import FunctionError, Invocation, LambdaContext
from shelfwise_local.runtime.runtime import LocalRuntime, running, unquote_key
from shelfwise_local.runtime.template import TemplateError

__all__ = [
    "AlarmEvaluator",
    "Clock",
    "Emulator",
    "EmulatorError",
    "FunctionError",
    "Invocation",
    "LambdaContext",
    "LocalRuntime",
    "Schedule",
    "StateChange",
    "TemplateError",
    "running",
    "unquote_key",
]
