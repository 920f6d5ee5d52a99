-- qnet's REST edge in Envoy: strict JSON request bodies, and every error in the API's envelope
-- {"success": false, "error": {"code": ..., "message": ...}}.
--
-- qnet_common/envoy_schema.py prepends tables generated from the descriptor set:
--   BODIES = { { "^POST /api/v2/network/execute$", "qnet.scheduler.v1.ExecuteRequest" }, ... }  (JSON bodies)
--   MESSAGES[type] = { fields = { name = spec }, names = "a, b" }  where spec is true (any value), a message type
--   name (an object), { map = spec } (an object with free keys, values per spec), { list = spec } (an array),
--   or { scalar = "int32" | "uint32" | "int64" | "uint64" | "number" | "bool" | "string" | "enum" }.
-- A value of the wrong JSON type, or an integer out of its field's range, is refused here with the field's
-- path: the transcoder would fail on it with an internal error.
-- and, from the error model qnet_common/errors.py (this file holds no copy of it):
--   ENVELOPE (the envelope trailer's name), GRPC_CODES[number] = gRPC status name, HTTP_STATUS[code] = its HTTP
--   status, CODE_OF_HTTP_STATUS[status] = the code of an HTTP error without the envelope (else OTHER_4XX_CODE
--   or OTHER_5XX_CODE).

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

local RANGES = {
  int32 = { -2147483648, 2147483647 },
  uint32 = { 0, 4294967295 },
  int64 = { -9223372036854775808, 9223372036854775807 },
  uint64 = { 0, 18446744073709551615 },
}
local EXPECTED = {
  int32 = "an integer from -2147483648 to 2147483647", uint32 = "an integer from 0 to 4294967295",
  int64 = "an integer from -9223372036854775808 to 9223372036854775807",
  uint64 = "an integer from 0 to 18446744073709551615", number = "a number", bool = "true or false",
  string = "a string", enum = "a string",
}

local function wrong(path, what, got)
  if #got > 40 then
    got = got:sub(1, 40) .. "..."
  end
  return nil, string.format('field "%s": expected %s, got %s', path == "" and "(body)" or path, what, got)
end

-- An integer literal within a range; 64-bit bounds are compared digit by digit (Lua numbers are doubles).
local function integer_in(text, kind)
  if not text:find("^%-?%d+$") then
    return false
  end
  local digits = text:gsub("^%-", ""):gsub("^0+", "")
  local negative = text:sub(1, 1) == "-"
  if kind == "int32" or kind == "uint32" then
    local value = tonumber(text)
    return #digits <= 10 and value >= RANGES[kind][1] and value <= RANGES[kind][2]
  end
  if negative and kind == "uint64" then
    return digits == ""
  end
  local limit = kind == "uint64" and "18446744073709551615"
    or (negative and "9223372036854775808" or "9223372036854775807")
  return #digits < #limit or (#digits == #limit and digits <= limit)
end

local function check_scalar(s, i, kind, path)
  local c = s:sub(i, i)
  local _, last = s:find("^[%w%.%+%-]+", i)
  local token = last and s:sub(i, last) or c
  if token == "null" then
    return last + 1
  end
  if c == '"' then
    local after, raw = read_string(s, i)
    if after == nil then
      return nil
    end
    if kind == "string" or kind == "enum" or ((kind == "int64" or kind == "uint64") and integer_in(raw, kind)) then
      return after
    end
    return wrong(path, EXPECTED[kind], '"' .. raw .. '"')
  end
  if c == "{" or c == "[" then
    return wrong(path, EXPECTED[kind], c == "{" and "an object" or "a list")
  end
  if last == nil then
    return nil
  end
  if kind == "bool" then
    if token == "true" or token == "false" then
      return last + 1
    end
  elseif kind == "number" then
    if tonumber(token) ~= nil and token:find("^%-?%d") then
      return last + 1
    end
  elseif kind == "enum" then
    if token:find("^%d+$") then
      return last + 1
    end
  elseif RANGES[kind] ~= nil then
    if integer_in(token, kind) then
      return last + 1
    end
  end
  return wrong(path, EXPECTED[kind], token)
end

check_value = function(s, i, spec, path, depth)
  if depth > MAX_DEPTH then
    return nil
  end
  local c = s:sub(i, i)
  if type(spec) == "table" and spec.scalar ~= nil then
    return check_scalar(s, i, spec.scalar, path)
  end
  if s:find("^null", i) then
    return i + 4
  end
  if type(spec) == "table" and spec.list ~= nil then
    if c ~= "[" then
      return wrong(path, "a list", c == "{" and "an object" or s:sub(i, i + 20))
    end
    return check_array(s, i, spec.list, path, depth)
  end
  if spec ~= true then -- a message or a map
    if c ~= "{" then
      return wrong(path, "an object", c == "[" and "a list" or s:sub(i, i + 20))
    end
    return check_object(s, i, spec, path, depth)
  end
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

-- Paths: ids are short ASCII tokens. A longer path would travel on as gRPC metadata past the services' limit
-- (a misleading 429), a percent-escaped byte above 0x7F as a string that is not UTF-8 (an internal error).
local MAX_PATH = 2048
local LUA_METADATA = "envoy.filters.http.lua"

local function refuse(handle, message)
  -- local_reply_config wraps it in the envelope (INVALID_ARGUMENT).
  handle:respond({ [":status"] = tostring(HTTP_STATUS.INVALID_ARGUMENT), ["content-type"] = "text/plain" }, message)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path") or ""
  if path:find("^/api/") then
    if (headers:get("content-type") or ""):find("^application/grpc") then
      -- Answered as REST, not as a gRPC local reply (an empty HTTP 200 a REST client cannot read).
      -- Read as the JSON it most likely is. Envoy took the request for gRPC already and answers its own
      -- refusals (a body that is not JSON) in gRPC form: envoy_on_response turns those back into REST.
      headers:replace("content-type", "application/json")
      handle:streamInfo():dynamicMetadata():set(LUA_METADATA, "grpc_typed_rest", "1")
    end
    if #path > MAX_PATH then
      return refuse(handle, string.format("request path of %d bytes: at most %d (ids are short)", #path, MAX_PATH))
    end
    local escaped = path:match("%%[89a-fA-F]%x")
    if escaped ~= nil then
      return refuse(handle, "ids are ASCII letters, digits, '_' and '-': the path has the byte "
        .. escaped .. "; check the id")
    end
  end
  local request = (headers:get(":method") or "") .. " " .. path:match("^[^?]*")
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
    refuse(handle, err)
  end
end

-- Responses ---------------------------------------------------------------------------------------------
-- The qnet servers send the ready envelope as the trailing metadata "qnet-error-envelope". A trailers-only
-- gRPC response (the usual abort) brings it here as a header; the transcoder (convert_grpc_status) has
-- already set the HTTP status, and this puts the envelope in place of its google.rpc.Status JSON. Errors
-- without that header (a trailer after initial metadata, a server outside qnet's interceptor, a non-JSON
-- error from the WebSocket bridge) are converted from the Status JSON or wrapped, so no error escapes the
-- envelope. Native gRPC responses pass untouched.

-- Longest message of an envelope made here (from Envoy's own text or an upstream's plain-text error), in bytes.
local MAX_MESSAGE_BYTES = 1000

-- The one place the envelope is built here. `message` is plain text, cut to MAX_MESSAGE_BYTES and escaped; or,
-- with `escaped`, already a JSON string's contents (taken from a google.rpc.Status the transcoder printed).
local function envelope(code, message, escaped)
  if not escaped then
    message = message:sub(1, MAX_MESSAGE_BYTES):gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end)
  end
  return '{"success":false,"error":{"code":"' .. code .. '","message":"' .. message .. '"}}'
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
  return envelope(reason or GRPC_CODES[code] or "UNKNOWN", message, true)
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
    local marks = handle:streamInfo():dynamicMetadata():get(LUA_METADATA)
    if not (marks and marks["grpc_typed_rest"]) then
      return -- a native gRPC call: untouched
    end
    local message = (headers:get("grpc-message") or ""):gsub("%%(%x%x)", function(h)
      return string.char(tonumber(h, 16))
    end)
    local inner = message:find('"message":"', 1, true) -- Envoy's own refusal, already in the envelope
    if inner ~= nil then
      local _, raw = read_string(message, inner + 10)
      message = raw and raw:gsub('\\"', '"') or message
    end
    headers:replace(":status", tostring(HTTP_STATUS.INVALID_ARGUMENT))
    for _, name in ipairs({ "grpc-status", "grpc-message", "grpc-status-details-bin" }) do
      headers:remove(name)
    end
    replace_body(handle, envelope("INVALID_ARGUMENT", "the REST API takes JSON with Content-Type:"
      .. " application/json (gRPC callers use the qnet.* gRPC paths): " .. message))
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
    local code = CODE_OF_HTTP_STATUS[status] or (status < 500 and OTHER_4XX_CODE or OTHER_5XX_CODE)
    local message = text:gsub("%s+$", "")
    if message == "" then
      message = "HTTP " .. status
    end
    replace_body(handle, envelope(code, message))
  end
end
