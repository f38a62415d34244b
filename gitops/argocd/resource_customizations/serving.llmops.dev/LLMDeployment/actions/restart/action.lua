-- restart: replace every model pod. The operator copies the annotation serving.llmops.dev/restartedAt into the pod
-- template, so a new value is a new revision, rolled out like any other (RollingUpdate: GPU-aware, one replica at a
-- time at most; Canary: through the steps). Refused while a canary is in progress: promote or abort it first.
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local rollout = (obj.status or {}).rollout or {}
if rollout.canaryRevision ~= nil and rollout.canaryRevision ~= rollout.stableRevision then
  error("a canary rollout of " .. name .. " to revision " .. rollout.canaryRevision ..
    " is in progress: promote or abort it before a restart", 0)
end
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.llmops.dev/restartedAt"] = os.date("!%Y-%m-%dT%XZ")
return obj
