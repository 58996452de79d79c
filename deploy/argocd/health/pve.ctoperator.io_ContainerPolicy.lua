-- Argo CD health of a ContainerPolicy (pve.ctoperator.io), read from the conditions the operator writes.
-- argocd-cm.yaml embeds this file as resource.customizations.health.pve.ctoperator.io_ContainerPolicy
-- (a test keeps the two identical). Argo CD runs it in gopher-lua (Lua 5.1) with only the base and
-- table libraries: no string.*, no methods on strings.
--
--   being deleted                          Progressing  (the operator removes or releases the CTs first)
--   no conditions yet                      Progressing
--   status older than metadata.generation  Progressing  (the operator has not seen the latest spec)
--   Degraded=True                          Degraded     (its message: unreachable, failed actions, ...)
--   Progressing=False, reason PoolFull     Degraded     (CTs that cannot be placed: every node at its limit)
--   Progressing=False, reason Unschedulable Degraded    (CTs the placement rules keep off every node with room)
--   Progressing=False, reason Paused       Suspended    (spec.paused)
--   Ready=True                             Healthy
--   otherwise                              Progressing  (creating, starting, repairing CTs)
-- Conditions set for an older generation than metadata.generation are ignored.

local hs = {}
local generation = obj.metadata.generation

local function current(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
        return nil
      end
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  if obj.spec ~= nil and obj.spec.deletionPolicy == "Retain" then
    hs.message = "Being deleted: the operator releases the policy's CTs (deletionPolicy Retain)"
  else
    hs.message = "Being deleted: the operator stops and destroys the policy's CTs"
  end
  return hs
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the policy"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. generation
    .. " (status is for generation " .. observed .. ")"
  return hs
end

local degraded = current("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

local progressing = current("Progressing")
if progressing ~= nil and progressing.status == "False" and (progressing.reason == "PoolFull" or progressing.reason == "Unschedulable") then
  hs.status = "Degraded"
  hs.message = describe(progressing)
  return hs
end
if progressing ~= nil and progressing.status == "False" and progressing.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = describe(progressing)
  return hs
end

local ready = current("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if progressing ~= nil and progressing.status == "True" then
  hs.message = describe(progressing)
elseif ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the operator to report the policy Ready"
end
return hs
