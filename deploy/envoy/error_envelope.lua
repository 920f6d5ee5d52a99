-- Turns a qnet gRPC error into the API's JSON envelope. The server's interceptor sends the ready envelope
-- as the trailer "qnet-error-envelope" (trailers-only responses arrive as headers); this replaces whatever
-- body the transcoder made with it, and drops the header.
function envoy_on_response(handle)
  local headers = handle:headers()
  local envelope = headers:get("qnet-error-envelope")
  if envelope == nil then
    return
  end
  headers:remove("qnet-error-envelope")
  headers:remove("grpc-status-details-bin")
  headers:replace("content-type", "application/json")
  local body = handle:body(true)
  body:setBytes(envelope)
end
