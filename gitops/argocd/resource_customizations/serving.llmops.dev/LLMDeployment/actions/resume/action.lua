-- resume: lift a pause. Same as `kubectl llm resume NAME`: removes the annotation serving.llmops.dev/rollout-paused.
local name = "LLMDeployment '" .. obj.metadata.name .. "'"
local annotations = obj.metadata.annotations or {}
local paused = annotations["serving.llmops.dev/rollout-paused"]
if paused ~= "true" and paused ~= "True" and paused ~= "TRUE" then
  error(name .. " is not paused (no serving.llmops.dev/rollout-paused annotation)", 0)
end
obj.metadata.annotations["serving.llmops.dev/rollout-paused"] = nil
return obj
