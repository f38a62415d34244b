-- retry: start an aborted canary again from its first step, with fresh analysis. Same as `kubectl llm retry NAME`:
-- the annotation serving.llmops.dev/rollout-request = retry/<id>.
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local rollout = (obj.status or {}).rollout or {}
local strategy = ((obj.spec or {}).rollout or {}).strategy or "RollingUpdate"
if strategy ~= "Canary" then
  error(name .. " uses strategy " .. strategy .. "; retry applies to Canary rollouts only", 0)
end
if rollout.aborted ~= true then
  error(name .. " is not aborted: nothing to retry", 0)
end
-- A unique request id without random numbers: the resourceVersion changes with every write (see promote).
if obj.metadata.resourceVersion == nil then
  error(name .. " has no metadata.resourceVersion: run this action on the live object", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["serving.llmops.dev/rollout-request"] = "retry/argocd-rv" .. obj.metadata.resourceVersion
return obj
