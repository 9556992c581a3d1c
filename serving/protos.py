"""Message classes for the few protos the server speaks that no installed package ships.

tensorflow-serving-api lacks monitoring_config.proto, and TensorFlow's wheel lacks the
Python modules of its ProfilerService. Each class here is built from the fields the
server reads or writes, with the .proto's own package, names and field numbers, so the
wire and text formats are the real ones; fields not declared pass through as unknown.
"""

from typing import Dict, Sequence, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()
_CLASSES: Dict[str, type] = {}


def message_classes(file_name: str, package: str,
                    messages: Sequence[Tuple[str, Sequence[Tuple[str, int, int, str]]]]) -> Dict[str, type]:
    """{name: class} for `messages`: (name, [(field, number, FieldDescriptorProto type, message type name or "")]),
    every field singular."""
    if file_name not in _CLASSES:
        proto = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3")
        for name, fields in messages:
            message = proto.message_type.add(name=name)
            for field, number, kind, type_name in fields:
                message.field.add(name=field, number=number, type=kind, label=F.LABEL_OPTIONAL,
                                  **({"type_name": f".{package}.{type_name}"} if type_name else {}))
        _POOL.Add(proto)
        _CLASSES[file_name] = {name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{package}.{name}"))
                               for name, _ in messages}
    return _CLASSES[file_name]
