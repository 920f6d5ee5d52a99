-- qnet's REST edge in Envoy: strict JSON request bodies, and every error in the API's envelope
-- {"success": false, "error": {"code": ..., "message": ...}}.
--
-- render_config (qnet_common/envoy.py) prepends two tables generated from the descriptor set:
--   BODIES = { { "^POST /api/v2/network/execute$", "qnet.scheduler.v1.ExecuteRequest" }, ... }  (JSON bodies)
--   MESSAGES[type] = { fields = { name = spec }, names = "a, b" }  where spec is true (any value), a message type
--   name (an object, or an array of them), or { map = spec } (an object with free keys, values per spec).

-- Requests ----------------------------------------------------------------------------------------------
-- The transcoder silently drops JSON fields the request message does not define (a misspelt "stratgy"
-- would run with the default strategy), so unknown fields are refused here, before it sees the body.
-- Malformed JSON is left to the transcoder, which names the syntax error.

local MAX_DEPTH = 64

local function skip_ws(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

-- s:sub(i, i) == '"'; returns the index after the closing quote and the raw (still escaped) text.
local function read_string(s, i)
  local j = i + 1
  while true do
    local k = s:find('["\\]', j)
    if k == nil then
      return nil
    end
    if s:sub(k, k) == '"' then
      return k + 1, s:sub(i + 1, k - 1)
    end
    j = k + 2
  end
end

local check_value

-- Returns the index after the object, or nil (malformed), or nil and a message (unknown field).
local function check_object(s, i, spec, path, depth)
  local message = type(spec) == "string" and MESSAGES[spec] or nil
  local map_values = type(spec) == "table" and spec.map or nil
  i = skip_ws(s, i + 1)
  if s:sub(i, i) == "}" then
    return i + 1
  end
  while true do
    if s:sub(i, i) ~= '"' then
      return nil
    end
    local key
    i, key = read_string(s, i)
    if i == nil then
      return nil
    end
    local child = true
    local child_path = path == "" and key or (path .. "." .. key)
    if message ~= nil then
      child = message.fields[key]
      if child == nil then
        if key:find("\\", 1, true) then
          child = true -- an escaped name: let the transcoder decide
        else
          return nil, string.format('unknown field "%s" in %s; the accepted fields are: %s',
            key, path == "" and "the request body" or path, message.names)
        end
      end
    elseif map_values ~= nil then
      child = map_values
    end
    i = skip_ws(s, i)
    if s:sub(i, i) ~= ":" then
      return nil
    end
    local err
    i, err = check_value(s, skip_ws(s, i + 1), child, child_path, depth + 1)
    if i == nil then
      return nil, err
    end
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "}" then
      return i + 1
    elseif c ~= "," then
      return nil
    end
    i = skip_ws(s, i + 1)
  end
end

local function check_array(s, i, spec, path, depth)
  i = skip_ws(s, i + 1)
  if s:sub(i, i) == "]" then
    return i + 1
  end
  local n = 0
  while true do
    local err
    i, err = check_value(s, i, spec, path .. "[" .. n .. "]", depth + 1)
    if i == nil then
      return nil, err
    end
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "]" then
      return i + 1
    elseif c ~= "," then
      return nil
    end
    i = skip_ws(s, i + 1)
    n = n + 1
  end
end

check_value = function(s, i, spec, path, depth)
  if depth > MAX_DEPTH then
    return nil
  end
  local c = s:sub(i, i)
  if c == "{" then
    return check_object(s, i, spec, path, depth)
  elseif c == "[" then
    return check_array(s, i, spec, path, depth)
  elseif c == '"' then
    return (read_string(s, i))
  end
  local _, last = s:find("^[%w%.%+%-]+", i)
  return last and last + 1 or nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local request = (headers:get(":method") or "") .. " " .. (headers:get(":path") or ""):match("^[^?]*")
  local body_type = nil
  for _, binding in ipairs(BODIES) do
    if request:find(binding[1]) then
      body_type = binding[2]
      break
    end
  end
  if body_type == nil then
    return
  end
  local body = handle:body()
  if body == nil or body:length() == 0 then
    return
  end
  local text = body:getBytes(0, body:length())
  local _, err = check_value(text, skip_ws(text, 1), body_type, "", 0)
  if err ~= nil then
    -- local_reply_config wraps this 400 in the envelope (code INVALID_ARGUMENT).
    handle:respond({ [":status"] = "400", ["content-type"] = "text/plain" }, err)
  end
end

-- Responses ---------------------------------------------------------------------------------------------
-- The qnet servers send the ready envelope as the trailing metadata "qnet-error-envelope". A trailers-only
-- gRPC response (the usual abort) brings it here as a header; the transcoder (convert_grpc_status) has
-- already set the HTTP status, and this puts the envelope in place of its google.rpc.Status JSON. Errors
-- without that header (a trailer after initial metadata, a server outside qnet's interceptor, a non-JSON
-- error from the WebSocket bridge) are converted from the Status JSON or wrapped, so no error escapes the
-- envelope. Native gRPC responses pass untouched.

local ENVELOPE = "qnet-error-envelope"
local GRPC_CODES = {
  [1] = "CANCELLED", [2] = "UNKNOWN", [3] = "INVALID_ARGUMENT", [4] = "DEADLINE_EXCEEDED", [5] = "NOT_FOUND",
  [6] = "ALREADY_EXISTS", [7] = "PERMISSION_DENIED", [8] = "RESOURCE_EXHAUSTED", [9] = "FAILED_PRECONDITION",
  [10] = "ABORTED", [11] = "OUT_OF_RANGE", [12] = "UNIMPLEMENTED", [13] = "INTERNAL", [14] = "UNAVAILABLE",
  [15] = "DATA_LOSS", [16] = "UNAUTHENTICATED",
}
local HTTP_CODES = {
  [400] = "INVALID_ARGUMENT", [401] = "UNAUTHENTICATED", [403] = "PERMISSION_DENIED", [404] = "NOT_FOUND",
  [409] = "ABORTED", [426] = "UPGRADE_REQUIRED", [429] = "RESOURCE_EXHAUSTED", [500] = "INTERNAL",
  [501] = "UNIMPLEMENTED", [503] = "UNAVAILABLE", [504] = "DEADLINE_EXCEEDED",
}

local function json_escape(text)
  return (text:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end))
end

local function envelope(code, escaped_message)
  return '{"success":false,"error":{"code":"' .. code .. '","message":"' .. escaped_message .. '"}}'
end

-- A google.rpc.Status as the transcoder prints it: {"code":5,"message":"...","details":[...]}.
local function from_status_json(text)
  local code = tonumber(text:match('^{"code":(%d+)'))
  if code == nil then
    return nil
  end
  local message = ""
  local at = text:find('"message":"', 1, true)
  if at ~= nil then
    local _, raw = read_string(text, at + 10)
    message = raw or ""
  end
  local info = text:find('"@type":"type.googleapis.com/google.rpc.ErrorInfo"', 1, true)
  local reason = info and text:match('"reason":"([%w_]+)"', info)
  return envelope(reason or GRPC_CODES[code] or "UNKNOWN", message)
end

local function replace_body(handle, text)
  local headers = handle:headers()
  headers:replace("content-type", "application/json")
  handle:body(true):setBytes(text)
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if content_type:find("^application/grpc") then
    return
  end
  for _, name in ipairs({ "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-accept-encoding" }) do
    headers:remove(name)
  end
  local ready = headers:get(ENVELOPE)
  if ready ~= nil then
    headers:remove(ENVELOPE)
    replace_body(handle, ready)
    return
  end
  local status = tonumber(headers:get(":status")) or 0
  if status < 400 then
    return
  end
  local body = handle:body(true)
  local text = body and body:getBytes(0, body:length()) or ""
  local trailers = handle:trailers()
  ready = trailers and trailers:get(ENVELOPE)
  if ready ~= nil then
    replace_body(handle, ready)
  elseif text:find('^{"code":%d') then
    replace_body(handle, from_status_json(text))
  elseif not (content_type:find("^application/json") and text:find('"success":false', 1, true)) then
    local code = HTTP_CODES[status] or (status < 500 and "INVALID_ARGUMENT" or "INTERNAL")
    local message = text:gsub("%s+$", "")
    if message == "" then
      message = "HTTP " .. status
    end
    replace_body(handle, envelope(code, json_escape(message:sub(1, 1000))))
  end
end
