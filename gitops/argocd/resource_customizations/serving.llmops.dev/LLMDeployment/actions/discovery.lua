-- Actions on an LLMDeployment. They write the annotations `kubectl llm` writes (serving.llmops.dev/rollout-request
-- and serving.llmops.dev/rollout-paused; the operator's docs/kubectl-llm.md), never spec or status, so a manifest
-- in Git shows no drift. The canary actions are listed for Canary objects only, each disabled when `kubectl llm`
-- would refuse it; restart is listed for every object.
-- Only Lua's base and table libraries: Argo CD runs discovery and actions without string or math.
local actions = {}
local status = obj.status or {}
local rollout = status.rollout or {}
local spec = obj.spec or {}
local specRollout = spec.rollout or {}
local annotations = obj.metadata.annotations or {}

local pausedValue = annotations["serving.llmops.dev/rollout-paused"]
local paused = pausedValue == "true" or pausedValue == "True" or pausedValue == "TRUE"
local canary = specRollout.strategy == "Canary"
local inProgress = rollout.canaryRevision ~= nil and rollout.canaryRevision ~= rollout.stableRevision
local aborted = rollout.aborted == true

actions["restart"] = {
  ["disabled"] = inProgress,
  ["iconClass"] = "fa fa-fw fa-redo",
  ["displayName"] = "Restart model pods"
}
if canary then
  actions["promote"] = {
    ["disabled"] = not inProgress or aborted,
    ["iconClass"] = "fa fa-fw fa-forward",
    ["displayName"] = "Promote to next step"
  }
  actions["promote-full"] = {
    ["disabled"] = not inProgress or aborted,
    ["iconClass"] = "fa fa-fw fa-fast-forward",
    ["displayName"] = "Promote fully"
  }
  actions["abort"] = {
    ["disabled"] = not inProgress or aborted,
    ["iconClass"] = "fa fa-fw fa-times-circle",
    ["displayName"] = "Abort canary"
  }
  actions["retry"] = {
    ["disabled"] = not aborted,
    ["iconClass"] = "fa fa-fw fa-redo-alt",
    ["displayName"] = "Retry canary"
  }
  actions["pause"] = {
    ["disabled"] = paused,
    ["iconClass"] = "fa fa-fw fa-pause-circle",
    ["displayName"] = "Pause rollout"
  }
end
if canary or paused then
  actions["resume"] = {
    ["disabled"] = not paused,
    ["iconClass"] = "fa fa-fw fa-play-circle",
    ["displayName"] = "Resume rollout"
  }
end
return actions
