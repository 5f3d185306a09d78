"""Errors raised while reading or writing contract messages."""


class ContractError(ValueError):
    """A message does not follow the Waystation MQTT contract."""


class PayloadTooLarge(ContractError):
    """The payload is larger than the contract allows; it was not parsed."""


class MalformedPayload(ContractError):
    """The payload is not valid JSON or does not match its schema."""


class TopicMismatch(ContractError):
    """The topic does not belong to the message, or names another station."""
