-- Health of an LLMDeployment (serving.llmops.dev/v1alpha1, triton-llm-operator).
--
-- The operator writes metav1.Conditions Ready, Progressing and Degraded (plus ScalingActive and ScalingLimited
-- with spec.autoscaling), each with a reason a person can act on, and status.rollout for rollouts and canaries
-- (the operator's README, "Status", and docs/rollouts.md).
--
-- Only Lua's base library is used (no string or math): Argo CD runs a health script from argocd-cm without them.

local hs = {}

local function condition(conditions, name)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function describe(c)
  local reason = c.reason or "Unknown"
  if c.message == nil or c.message == "" then
    return reason
  end
  return reason .. ": " .. c.message
end

-- Extra facts worth a glance next to Healthy or Degraded: what holds the autoscaler back.
local function scalingNote(conditions)
  local limited = condition(conditions, "ScalingLimited")
  if isTrue(limited) then
    return "; scaling limited (" .. describe(limited) .. ")"
  end
  return ""
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

-- 1. The operator has not yet acted on the latest spec: everything else in status describes an older one.
local generation = tonumber(obj.metadata.generation)
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (status describes generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local conditions = status.conditions
local rollout = status.rollout or {}

-- 2. Something needs a person: a missing Secret/PVC, no such GPU, unschedulable pods, a rejected child, a canary
-- rolled back by its analysis or aborted.
local degraded = condition(conditions, "Degraded")
if isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded) .. scalingNote(conditions)
  return hs
end

-- 3. A canary that waits: a pause step, a user's pause annotation, inconclusive analysis, Prometheus unreachable.
local progressing = condition(conditions, "Progressing")
if rollout.phase == "Paused" or (isTrue(progressing) and progressing.reason == "CanaryPaused") then
  hs.status = "Suspended"
  local why = rollout.pausedReason or "paused"
  local message = rollout.message
  if message == nil or message == "" then
    message = progressing ~= nil and progressing.message or ""
  end
  hs.message = "Canary paused (" .. why .. "): " .. message
  return hs
end

-- 4. A new revision is replacing the old one (rolling update or canary steps), the first one included.
local ready = condition(conditions, "Ready")
if isTrue(progressing) then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  if ready ~= nil and ready.status ~= "True" and ready.message ~= nil then
    hs.message = hs.message .. "; " .. ready.message
  end
  return hs
end
if rollout.phase == "Progressing" then
  hs.status = "Progressing"
  hs.message = rollout.message or "Rollout in progress"
  return hs
end

-- 5. Serving: every replica of the current revision is ready.
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  local annotations = obj.metadata.annotations or {}
  local paused = annotations["serving.llmops.dev/rollout-paused"]
  if paused == "true" or paused == "True" or paused == "TRUE" then
    hs.message = hs.message .. "; rollouts paused (serving.llmops.dev/rollout-paused): the next one waits for resume"
  end
  hs.message = hs.message .. scalingNote(conditions)
  return hs
end

-- 6. Pods starting: model download and load can take minutes.
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
