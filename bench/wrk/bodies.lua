-- wrk script: POST the request bodies of a file (one JSON body per line), each connection
-- cycling through them from its own start, with the API key in LAMBDAREC_API_KEY (if set) as a
-- bearer token. Usage: LAMBDAREC_API_KEY=... wrk ... -s bodies.lua URL -- BODIES_FILE
local bodies, count, next_body = {}, 0, 1
local headers = {["Content-Type"] = "application/json"}
local token = os.getenv("LAMBDAREC_API_KEY")
if token and token ~= "" then
  headers["Authorization"] = "Bearer " .. token
end

function init(args)
  for line in io.lines(args[1]) do
    count = count + 1
    bodies[count] = line
  end
  next_body = math.random(count)
end

function request()
  next_body = next_body % count + 1
  return wrk.format("POST", nil, headers, bodies[next_body])
end
