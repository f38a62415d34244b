-- pause: hold the canary where it is until resume (or a promote); set between rollouts, it holds the next one.
-- Same as `kubectl llm pause NAME`: the annotation serving.llmops.dev/rollout-paused = "true".
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local strategy = ((obj.spec or {}).rollout or {}).strategy or "RollingUpdate"
if strategy ~= "Canary" then
  error(name .. " uses strategy " .. strategy .. "; pause applies to Canary rollouts only", 0)
end
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local paused = obj.metadata.annotations["serving.llmops.dev/rollout-paused"]
if paused == "true" or paused == "True" or paused == "TRUE" then
  error(name .. " is already paused; the resume action lifts the pause", 0)
end
obj.metadata.annotations["serving.llmops.dev/rollout-paused"] = "true"
return obj
