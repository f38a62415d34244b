-- promote-full: skip every remaining step and analysis of the canary; also lifts a pause. Same as
-- `kubectl llm promote --full NAME`: the annotation serving.llmops.dev/rollout-request = promote-full/<id>.
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local rollout = (obj.status or {}).rollout or {}
local strategy = ((obj.spec or {}).rollout or {}).strategy or "RollingUpdate"
if strategy ~= "Canary" then
  error(name .. " uses strategy " .. strategy .. "; promote-full applies to Canary rollouts only", 0)
end
if rollout.canaryRevision == nil or rollout.canaryRevision == rollout.stableRevision then
  error(name .. " has no canary rollout in progress", 0)
end
if rollout.aborted == true then
  error("the rollout of " .. name .. " to revision " .. rollout.canaryRevision ..
    " was aborted; run the retry action first", 0)
end
-- A unique request id without random numbers: the resourceVersion changes with every write (see promote).
if obj.metadata.resourceVersion == nil then
  error(name .. " has no metadata.resourceVersion: run this action on the live object", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.llmops.dev/rollout-request"] = "promote-full/argocd-rv" .. obj.metadata.resourceVersion
obj.metadata.annotations["serving.llmops.dev/rollout-paused"] = nil
return obj
