-- abort: roll the canary back now, as a failed analysis would (weight 0, stable at full size); it stays aborted
-- until the spec changes or the retry action. Same as `kubectl llm abort NAME`: the annotation
-- serving.llmops.dev/rollout-request = abort/<id>.
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local rollout = (obj.status or {}).rollout or {}
local strategy = ((obj.spec or {}).rollout or {}).strategy or "RollingUpdate"
if strategy ~= "Canary" then
  error(name .. " uses strategy " .. strategy .. "; abort applies to Canary rollouts only", 0)
end
if rollout.canaryRevision == nil or rollout.canaryRevision == rollout.stableRevision then
  error(name .. " has no canary rollout in progress", 0)
end
if rollout.aborted == true then
  error("the rollout of " .. name .. " is already aborted", 0)
end
-- A unique request id without random numbers: the resourceVersion changes with every write (see promote).
if obj.metadata.resourceVersion == nil then
  error(name .. " has no metadata.resourceVersion: run this action on the live object", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.llmops.dev/rollout-request"] = "abort/argocd-rv" .. obj.metadata.resourceVersion
return obj
