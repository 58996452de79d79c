-- Argo CD health of a ProxmoxServerPool (pve.ctoperator.io), read from the conditions the operator writes.
-- argocd-cm.yaml embeds this file as resource.customizations.health.pve.ctoperator.io_ProxmoxServerPool
-- (a test keeps the two identical). Argo CD runs it in gopher-lua (Lua 5.1) with only the base and
-- table libraries: no string.*, no methods on strings.
--
--   being deleted                          Progressing
--   no conditions yet                      Progressing  (the operator has not probed the pool yet)
--   status older than metadata.generation  Progressing  (the operator has not seen the latest spec)
--   Degraded=True                          Degraded     (its message: unreachable, credentials, nodes offline, ...)
--   Ready=True                             Healthy      (connected; every node online)
--   otherwise                              Progressing
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
  hs.message = "Being deleted: waiting for the operator to release the pool"
  return hs
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to connect to the pool"
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

local ready = current("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the operator to report the pool Ready"
end
return hs
