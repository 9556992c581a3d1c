"""ModelServerConfig handling: read, build, write, and the version policy it carries.

The file format is TF Serving's own (`--model_config_file`, a text proto), so one
models.config drives both this embedded server and the official image.

    python -m serving.config --output models.config --model keep_general=/models/keep_general
"""

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional, Tuple

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import invalid

_VERSION_DIR = re.compile(r"\d+")


def check_model_name(name: str) -> str:
    """Model names become paths and URL parts: refuse anything that could walk out of them."""
    if not name:
        raise invalid("model name is empty")
    if "/" in name or "\\" in name or ".." in name or "\x00" in name or ":" in name:
        raise invalid(f"model name {name!r} must not contain path separators, ':' or '..'")
    return name


def is_version_dir_name(name: str) -> bool:
    return bool(_VERSION_DIR.fullmatch(name))


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: latest N (the default, N=1), all, or specific versions."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: Tuple[int, ...] = ()

    def select(self, available: Iterable[int]) -> list:
        """The versions to serve, ascending, out of those that can be loaded."""
        avail = sorted(set(available))
        if self.kind == "all":
            return avail
        if self.kind == "specific":
            return [v for v in avail if v in self.versions]
        return avail[-self.num_versions:] if self.num_versions > 0 else []

    @classmethod
    def from_proto(cls, policy) -> "VersionPolicy":
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            return cls("all")
        if which == "specific":
            if not policy.specific.versions:
                raise invalid("model_version_policy.specific lists no versions")
            return cls("specific", versions=tuple(sorted(policy.specific.versions)))
        n = policy.latest.num_versions if which == "latest" else 1
        # TF Serving treats an unset num_versions as 1.
        return cls("latest", num_versions=n or 1)


@dataclass(frozen=True)
class ModelSpec:
    """One served model, as configured."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def parse_config(config: model_server_config_pb2.ModelServerConfig) -> Dict[str, ModelSpec]:
    """{name: ModelSpec}; rejects what TF Serving would reject at startup."""
    if config.WhichOneof("config") != "model_config_list":
        raise invalid("ModelServerConfig must hold a model_config_list (custom_model_config is not supported)")
    specs = {}
    for entry in config.model_config_list.config:
        name = check_model_name(entry.name)
        if name in specs:
            raise invalid(f"model {name!r} is configured twice")
        if not entry.base_path:
            raise invalid(f"model {name!r} has no base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise invalid(f"model {name!r}: model_platform {entry.model_platform!r} is not supported "
                          "(only \"tensorflow\")")
        specs[name] = ModelSpec(
            name=name,
            base_path=entry.base_path,
            policy=VersionPolicy.from_proto(entry.model_version_policy),
            labels=dict(entry.version_labels),
        )
    return specs


def read_text_proto(path: str, message, what: str):
    """`message` parsed from the text proto at `path`; errors name the file (`what`: "model config file")."""
    try:
        with open(path) as f:
            text_format.Parse(f.read(), message)
    except OSError as e:
        raise invalid(f"cannot read {what} {path}: {e}") from e
    except text_format.ParseError as e:
        # protobuf's own text, which TF Serving prints and its tests look for.
        raise invalid(f"{what} {path}: Error parsing text-format {message.DESCRIPTOR.full_name}: {e}") from e
    return message


def read_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    return read_text_proto(path, model_server_config_pb2.ModelServerConfig(), "model config file")


def build_config(models: Mapping[str, str], num_versions: int = 1,
                 labels: Optional[Mapping[str, Mapping[str, int]]] = None
                 ) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig serving the latest `num_versions` of each {name: base_path}."""
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in models.items():
        entry = config.model_config_list.config.add()
        entry.name = check_model_name(name)
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = num_versions
        for label, version in (labels or {}).get(name, {}).items():
            entry.version_labels[label] = version
    return config


def config_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def write_models_config(path: str, models: Mapping[str, str], num_versions: int = 1) -> str:
    """Writes models.config atomically (the server may be polling it); returns the path."""
    text = config_text(build_config(models, num_versions))
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="Write a TF Serving models.config.")
    p.add_argument("--output", required=True)
    p.add_argument("--model", action="append", required=True, metavar="NAME=BASE_PATH")
    p.add_argument("--num_versions", type=int, default=1)
    a = p.parse_args(argv)
    models = {}
    for item in a.model:
        name, sep, base = item.partition("=")
        if not sep or not base:
            p.error(f"--model {item!r}: expected NAME=BASE_PATH")
        models[name] = base
    print(write_models_config(a.output, models, a.num_versions))


if __name__ == "__main__":
    main()
