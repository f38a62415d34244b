-- promote: end the current pause of the canary and go to the next step; also lifts a pause. Same as
-- `kubectl llm promote NAME`: the annotation serving.llmops.dev/rollout-request = promote/<id>.
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local rollout = (obj.status or {}).rollout or {}
local strategy = ((obj.spec or {}).rollout or {}).strategy or "RollingUpdate"
if strategy ~= "Canary" then
  error(name .. " uses strategy " .. strategy .. "; promote applies to Canary rollouts only", 0)
end
if rollout.canaryRevision == nil or rollout.canaryRevision == rollout.stableRevision then
  error(name .. " has no canary rollout in progress", 0)
end
if rollout.aborted == true then
  error("the rollout of " .. name .. " to revision " .. rollout.canaryRevision ..
    " was aborted; run the retry action first", 0)
end
-- The operator carries out a request once, when its value differs from status.rollout.lastRequest. Argo CD gives
-- action scripts no random numbers; the object's resourceVersion changes with every write (this one included), so
-- it makes the id unique.
if obj.metadata.resourceVersion == nil then
  error(name .. " has no metadata.resourceVersion: run this action on the live object", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.llmops.dev/rollout-request"] = "promote/argocd-rv" .. obj.metadata.resourceVersion
obj.metadata.annotations["serving.llmops.dev/rollout-paused"] = nil
return obj
