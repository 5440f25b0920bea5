"""Loading and validating manifests: strict, with the file, document, object and field named."""

import pytest

from mlplane.api import REGISTRY, Job, Pod
from mlplane.api.loader import ManifestError, load_paths, load_text
from mlplane.api.quantity import milli, parse_quantity, whole
from mlplane.api.selectors import parse_label_selector

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: train}
spec:
  completions: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: w
        image: python:3.12
        command: [python3, -c, "print(1)"]
        resources: {requests: {cpu: 500m, memory: 1Gi}}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(ManifestError) as e:
        load_text(text, "f.yaml")
    return e.value.errors


def test_valid_job_round_trips_in_wire_shape():
    (doc,) = load_text(JOB, "f.yaml")
    job = doc.obj
    assert isinstance(job, Job) and job.spec.completions == 3
    data = job.to_dict()
    assert data["apiVersion"] == "batch/v1" and data["spec"]["completionMode"] == "Indexed"
    assert data["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "500m"
    # defaults as the API server applies them
    assert data["spec"]["backoffLimit"] == 6 and data["spec"]["parallelism"] == 1
    assert REGISTRY.of(job).decode(data) == job


@pytest.mark.parametrize("patch, field, words", [
    ("spec:\n  parallelism: -1\n", "spec.parallelism", "greater than or equal to 0"),
    ("spec:\n  bogus: 1\n", "spec.bogus", 'unknown field "spec.bogus"'),
    ("spec:\n  backoffLimit: three\n", "spec.backoffLimit", "valid integer"),
    ("spec:\n  suspend: 'yes'\n", "spec.suspend", "valid boolean"),
])
def test_bad_fields_are_named(patch, field, words):
    text = JOB.replace("spec:\n  completions: 3\n", patch + "  completions: 3\n", 1)
    (err,) = _errors(text)
    assert err.startswith("f.yaml: document 1 (Job/train): ")
    assert field in err and words in err


def test_missing_required_field_and_semantic_checks():
    (err,) = _errors("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n")
    assert "spec.containers: Required value" in err
    (err,) = _errors(JOB.replace("restartPolicy: Never", "restartPolicy: Always"))
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always"' in err
    (err,) = _errors(JOB.replace("  completions: 3\n", ""))
    assert "spec.completions: Required value: when completion mode is Indexed" in err


def test_every_bad_document_is_reported_and_unknown_kinds_named():
    text = JOB + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a}]}\n" \
        + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    errors = _errors(text)
    assert len(errors) == 2
    assert "document 2 (Pod/Bad_Name)" in errors[0] and "metadata.name" in errors[0]
    assert 'no matches for kind "Widget" in version "example.com/v1"' in errors[1]


def test_malformed_yaml_names_the_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [\n")
    with pytest.raises(ManifestError) as e:
        load_paths([str(f)])
    assert f"{f}:" in e.value.errors[0] and "invalid YAML" in e.value.errors[0]
    with pytest.raises(ManifestError, match="does not exist"):
        load_paths([str(tmp_path / "missing.yaml")])


def test_timestamps_stay_strings_and_lists_flatten():
    docs = load_text("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n"
                     "    name: p\n    creationTimestamp: 2024-01-01T00:00:00Z\n  spec: {containers: [{name: a}]}\n")
    assert isinstance(docs[0].obj, Pod)
    assert docs[0].obj.metadata.creation_timestamp == "2024-01-01T00:00:00Z"


def test_quantities():
    assert milli("500m") == 500 and milli(2) == 2000 and milli("0.1") == 100
    assert whole("1Gi") == 2**30 and whole("1G") == 10**9 and whole("1e3") == 1000
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity("1x")


def test_label_selectors():
    sel = parse_label_selector("app=train,tier!=dev,env in (a,b),!legacy,gpu")
    assert sel.matches({"app": "train", "env": "a", "gpu": "h200"})
    assert not sel.matches({"app": "train", "env": "c", "gpu": "h200"})
    assert not sel.matches({"app": "train", "env": "a", "gpu": "1", "legacy": "1"})


def test_pod_tolerations_are_validated_as_upstream():
    # k8s.io/kubernetes pkg/apis/core/validation ValidateTolerations.
    from mlplane.api.loader import ManifestError, load_text

    def pod(toleration):
        return ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
                f"  tolerations: [{toleration}]\n  containers: [{{name: c, command: ['true']}}]\n")

    for toleration, path in (("{operator: Equal, value: x}", "spec.tolerations[0].operator"),
                             ("{key: k, operator: Exists, value: x}", "spec.tolerations[0].value"),
                             ("{key: k, effect: NoSchedule, tolerationSeconds: 5}", "spec.tolerations[0].effect")):
        with pytest.raises(ManifestError) as e:
            load_text(pod(toleration), "p.yaml")
        assert path in str(e.value)
    load_text(pod("{operator: Exists}"), "p.yaml")  # tolerates everything
