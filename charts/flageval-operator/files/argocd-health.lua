-- Argo CD health check for flageval.io/Evaluation (resource.customizations.health.flageval.io_Evaluation).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
local progress = status.progress or ""
if status.observedGeneration ~= nil and obj.metadata ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Datasets " .. progress .. " finished; release " .. tostring(status.release == true)
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "Evaluation failed"
elseif status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended with datasets " .. progress .. " finished"
else
  hs.status = "Progressing"
  hs.message = status.phase .. ": datasets " .. progress .. " finished"
end
return hs
