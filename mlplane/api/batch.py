"""batch/v1 Job."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mlplane.api.core import PodSpec
from mlplane.api.meta import Condition, LabelSelector, Model, NonNegative, Object, ObjectMeta


class PodTemplateSpec(Model):
    metadata: ObjectMeta | None = None
    spec: PodSpec


class PodFailurePolicyOnExitCodesRequirement(Model):
    container_name: str | None = None
    operator: Literal["In", "NotIn"]
    values: Annotated[list[int], Field(min_length=1, max_length=255)]


class PodFailurePolicyOnPodConditionsPattern(Model):
    type: str
    status: Literal["True", "False", "Unknown"] = "True"


class PodFailurePolicyRule(Model):
    action: Literal["FailJob", "FailIndex", "Ignore", "Count"]
    on_exit_codes: PodFailurePolicyOnExitCodesRequirement | None = None
    on_pod_conditions: list[PodFailurePolicyOnPodConditionsPattern] | None = None


class PodFailurePolicy(Model):
    rules: Annotated[list[PodFailurePolicyRule], Field(max_length=20)]


class JobSpec(Model):
    template: PodTemplateSpec
    parallelism: NonNegative | None = 1
    completions: NonNegative | None = None
    completion_mode: Literal["NonIndexed", "Indexed"] = "NonIndexed"
    backoff_limit: NonNegative | None = 6
    pod_failure_policy: PodFailurePolicy | None = None
    suspend: bool = False
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    ttl_seconds_after_finished: NonNegative | None = None
    selector: LabelSelector | None = None
    manual_selector: bool | None = None


class UncountedTerminatedPods(Model):
    succeeded: list[str] | None = None
    failed: list[str] | None = None


class JobStatus(Model):
    conditions: list[Condition] | None = None
    start_time: str | None = None
    completion_time: str | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    ready: int | None = None
    terminating: int | None = None
    completed_indexes: str | None = None
    failed_indexes: str | None = None
    uncounted_terminated_pods: UncountedTerminatedPods | None = None


class Job(Object):
    API_VERSION, KIND = "batch/v1", "Job"
    spec: JobSpec
    status: JobStatus = Field(default_factory=JobStatus)

    def semantic_errors(self) -> list[tuple[str, str]]:
        errors = []
        if len(self.name) > 63:  # the name becomes the batch.kubernetes.io/job-name label value
            errors.append(("metadata.name", f"Invalid value: {self.name!r}: must be no more than 63 characters"))
        spec = self.spec
        policy = spec.template.spec.restart_policy
        if policy not in ("Never", "OnFailure"):
            errors.append(("spec.template.spec.restartPolicy",
                           f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'))
        if spec.completion_mode == "Indexed" and spec.completions is None:
            errors.append(("spec.completions", "Required value: when completion mode is Indexed"))
        if spec.pod_failure_policy is not None:
            if policy != "Never":
                errors.append(("spec.template.spec.restartPolicy",
                               "Invalid value: only \"Never\" is supported when podFailurePolicy is specified"))
            for i, rule in enumerate(spec.pod_failure_policy.rules):
                path = f"spec.podFailurePolicy.rules[{i}]"
                if (rule.on_exit_codes is None) == (rule.on_pod_conditions is None):
                    errors.append((path, "exactly one of onExitCodes and onPodConditions is required"))
                if rule.on_exit_codes and rule.on_exit_codes.operator == "In" and 0 in rule.on_exit_codes.values:
                    errors.append((f"{path}.onExitCodes.values", "Invalid value: 0: value 0 cannot be used "
                                   "for the In operator"))
                if rule.action == "FailIndex" and spec.completion_mode != "Indexed":
                    errors.append((f"{path}.action", "FailIndex is supported only for Indexed jobs"))
        if spec.selector and spec.selector.match_labels:
            labels = (spec.template.metadata.labels if spec.template.metadata else None) or {}
            for k, v in spec.selector.match_labels.items():
                if labels.get(k) != v:
                    errors.append(("spec.template.metadata.labels",
                                   "Invalid value: `selector` does not match template `labels`"))
                    break
        return errors
