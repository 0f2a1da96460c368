-- wrk script: POST the request bodies of a file (one JSON body per line), each connection
-- cycling through them from its own start. Usage: wrk ... -s bodies.lua URL -- BODIES_FILE
local bodies, count, next_body = {}, 0, 1

function init(args)
  for line in io.lines(args[1]) do
    count = count + 1
    bodies[count] = line
  end
  next_body = math.random(count)
end

function request()
  next_body = next_body % count + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[next_body])
end
