"""The ResourceClaim controller: makes the claims pods ask for through templates, and releases
claims whose pods are gone (upstream pkg/controller/resourceclaim/controller.go).

Pods: for each ``spec.resourceClaims`` entry naming a ``resourceClaimTemplateName`` and not yet
in ``status.resourceClaimStatuses``, the controller creates a ResourceClaim from the template
(its metadata and spec), named ``<pod>-<claim>-<random>``, controlled by the pod (so the store's
ownerReference cascade deletes it with the pod) and annotated with
``resource.kubernetes.io/pod-claim-name``; then it records the name in the pod's
``status.resourceClaimStatuses``. A claim already made for the entry (found by owner and
annotation, e.g. after a crash between the two writes) is reused, never made twice. A missing
template is retried with backoff; the scheduler says what the pod waits for.

Claims: a pod in ``status.reservedFor`` that no longer exists (or was replaced), or has
finished, is removed from it. A claim the scheduler allocated carries the
``resource.kubernetes.io/delete-protection`` finalizer; when its last consumer goes (or it is
deleted while unused) the controller clears ``status.allocation`` and then the finalizer. Claims
allocated by anyone else keep their allocation, as upstream. An unreserved claim made for a pod
that has finished is deleted.
"""

from __future__ import annotations

import logging

from mlplane.api.core import Pod, PodResourceClaimStatus
from mlplane.api.errors import AlreadyExists, Conflict, NotFound
from mlplane.api.meta import ObjectMeta, controller_of, owner_reference
from mlplane.api.resource import DELETE_PROTECTION_FINALIZER, ResourceClaim, ResourceClaimTemplate
from mlplane.control.runtime import Controller, EventRecorder, Informer
from mlplane.control.store.base import Store
from mlplane.policy.pod.dynamicresources import POD_CLAIM_NAME_ANNOTATION

log = logging.getLogger(__name__)

COMPONENT = "resourceclaim-controller"
POD_PREFIX, CLAIM_PREFIX = "pod:", "claim:"


def _generate_name(pod: str, claim: str) -> str:
    """``<pod>-<claim>-``, each part cut to 28 characters when the whole would pass 57, so the
    generated name stays a valid object name (upstream handleClaim)."""
    name = f"{pod}-{claim}-"
    if len(name) > 57:
        name = f"{pod[:28]}-{claim[:28]}-"
    return name


def _claims_of(pod: Pod) -> list[str]:
    """The names of every ResourceClaim the pod uses (named directly or made for it)."""
    names = [c.resource_claim_name for c in pod.spec.resource_claims or [] if c.resource_claim_name]
    names += [s.resource_claim_name for s in pod.status.resource_claim_statuses or [] if s.resource_claim_name]
    return names


def _pod_keys(pod: Pod) -> list[str]:
    keys = [f"{CLAIM_PREFIX}{pod.namespace}/{name}" for name in _claims_of(pod)]
    if any(c.resource_claim_template_name for c in pod.spec.resource_claims or []):
        keys.append(POD_PREFIX + pod.key)
    return keys


def _claim_keys(claim: ResourceClaim) -> list[str]:
    keys = [CLAIM_PREFIX + claim.key]
    ref = controller_of(claim)
    if ref is not None and ref.kind == Pod.KIND:
        keys.append(f"{POD_PREFIX}{claim.namespace}/{ref.name}")  # a claim it waits for may be gone
    return keys


def _pod_done(pod: Pod) -> bool:
    """Whether the pod will not use its claims again (upstream isPodDone): it finished, or it is
    being deleted before it was ever scheduled."""
    return pod.terminal or bool(pod.metadata.deletion_timestamp and not pod.spec.node_name)


class ResourceClaimController:
    """Creates per-pod claims from templates and releases claims of pods that are gone."""

    def __init__(self, store: Store, *, recorder: EventRecorder | None = None, workers: int = 2):
        self.store = store
        self.recorder = recorder or EventRecorder(store, COMPONENT)
        self.pods = Informer(store, Pod)
        self.claims = Informer(store, ResourceClaim)
        self.templates = Informer(store, ResourceClaimTemplate)
        self.controller = Controller(COMPONENT, self.reconcile, workers=workers)
        self.controller.watch(self.pods, _pod_keys).watch(self.claims, _claim_keys)
        self.controller.watch(self.templates, self._pods_using_template, on=("ADDED", "MODIFIED"))

    def start(self) -> "ResourceClaimController":
        for informer in (self.templates, self.claims, self.pods):
            informer.start()
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        for informer in (self.pods, self.claims, self.templates):
            informer.stop()

    def _pods_using_template(self, template: ResourceClaimTemplate) -> list[str]:
        return [POD_PREFIX + p.key for p in self.pods.list(
            lambda p: p.namespace == template.namespace and any(
                c.resource_claim_template_name == template.name for c in p.spec.resource_claims or []))]

    def reconcile(self, key: str) -> None:
        if key.startswith(POD_PREFIX):
            self._sync_pod(key[len(POD_PREFIX):])
        elif key.startswith(CLAIM_PREFIX):
            self._sync_claim(key[len(CLAIM_PREFIX):])
        else:
            log.warning("%s: ignoring unknown key %r", COMPONENT, key)

    # -- pods: claims from templates ----------------------------------------------------------------
    def _sync_pod(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        try:
            pod = self.store.get(Pod, namespace, name)
        except NotFound:
            return
        if pod.metadata.deletion_timestamp or _pod_done(pod):
            return
        made = {s.name for s in pod.status.resource_claim_statuses or []}
        statuses = list(pod.status.resource_claim_statuses or [])
        for entry in pod.spec.resource_claims or []:
            if entry.resource_claim_template_name is None or entry.name in made:
                continue
            claim = self._existing_claim(pod, entry.name) or self._create_claim(pod, entry.name,
                                                                               entry.resource_claim_template_name)
            statuses.append(PodResourceClaimStatus(name=entry.name, resource_claim_name=claim.name))
        if len(statuses) == len(pod.status.resource_claim_statuses or []):
            return
        updated = pod.model_copy(update={"status": pod.status.model_copy(update={"resource_claim_statuses": statuses})})
        self.store.update_status(updated)  # a Conflict re-queues the pod; the claims made are found again

    def _existing_claim(self, pod: Pod, pod_claim: str) -> ResourceClaim | None:
        for claim in self.store.list(ResourceClaim, pod.namespace).items:
            ref = controller_of(claim)
            if (ref is not None and ref.uid == pod.uid
                    and (claim.metadata.annotations or {}).get(POD_CLAIM_NAME_ANNOTATION) == pod_claim):
                return claim
        return None

    def _create_claim(self, pod: Pod, pod_claim: str, template_name: str) -> ResourceClaim:
        try:
            template = self.store.get(ResourceClaimTemplate, pod.namespace, template_name)
        except NotFound:
            message = f"PodResourceClaim {pod_claim}: resource claim template {template_name!r} not found"
            self.recorder.warning(pod, "FailedResourceClaimCreation", message)
            raise NotFound(f"pod {pod.key}: {message}") from None
        meta = template.spec.metadata
        annotations = dict((meta.annotations if meta else None) or {})
        annotations[POD_CLAIM_NAME_ANNOTATION] = pod_claim
        claim = ResourceClaim(
            metadata=ObjectMeta(generate_name=_generate_name(pod.name, pod_claim), namespace=pod.namespace,
                                labels=dict((meta.labels if meta else None) or {}) or None,
                                annotations=annotations, owner_references=[owner_reference(pod)]),
            spec=template.spec.spec.model_copy(deep=True))
        for _ in range(3):  # a generated name can collide with an existing claim
            try:
                return self.store.create(claim)
            except AlreadyExists:
                continue
        raise AlreadyExists(f"pod {pod.key}: no free name for the claim of pod claim {pod_claim!r}")

    # -- claims: release ----------------------------------------------------------------------------
    def _sync_claim(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        try:
            claim = self.store.get(ResourceClaim, namespace, name)
        except NotFound:
            return
        consumers = claim.status.reserved_for or []
        valid = [r for r in consumers if r.resource != "pods" or self._pod_uses(namespace, r.name, r.uid)]
        protected = DELETE_PROTECTION_FINALIZER in (claim.metadata.finalizers or [])
        if len(valid) < len(consumers):
            # The last consumer leaving deallocates what our scheduler allocated (upstream acts on
            # this transition only: an allocation nobody ever reserved is left alone).
            update = {"reserved_for": valid or None}
            if not valid and protected:
                update["allocation"] = None
            status = claim.status.model_copy(update=update)
            claim = self.store.update_status(claim.model_copy(update={"status": status}))
            log.debug("%s: released %s (%d consumers left)", COMPONENT, claim.key, len(valid))
            if protected and claim.status.allocation is None:
                claim = self._unprotect(claim)
        elif protected and not valid and claim.metadata.deletion_timestamp:
            if claim.status.allocation is not None:
                status = claim.status.model_copy(update={"allocation": None})
                claim = self.store.update_status(claim.model_copy(update={"status": status}))
            claim = self._unprotect(claim)
        if not valid:
            self._delete_if_pod_done(claim)

    def _unprotect(self, claim: ResourceClaim) -> ResourceClaim:
        finalizers = [f for f in claim.metadata.finalizers or [] if f != DELETE_PROTECTION_FINALIZER]
        return self.store.update(claim.model_copy(
            update={"metadata": claim.metadata.model_copy(update={"finalizers": finalizers or None})}))

    def _pod_uses(self, namespace: str, name: str, uid: str) -> bool:
        try:
            pod = self.store.get(Pod, namespace, name)
        except NotFound:
            return False
        return pod.uid == uid and not _pod_done(pod)

    def _delete_if_pod_done(self, claim: ResourceClaim) -> None:
        """An unreserved claim made for a pod that has finished goes (upstream: the garbage
        collector would, only once the pod itself is deleted)."""
        ref = controller_of(claim)
        if ref is None or ref.kind != Pod.KIND:
            return
        try:
            pod = self.store.get(Pod, claim.namespace, ref.name)
        except NotFound:
            return  # the ownerReference cascade deletes it
        if pod.uid == ref.uid and _pod_done(pod):
            try:
                self.store.delete(ResourceClaim, claim.namespace, claim.name)
            except (NotFound, Conflict):
                pass
