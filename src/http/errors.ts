/** Errors the HTTP layer raises; each maps to a status code and a stable `name` in the JSON body. */
export class HttpError extends Error {
  override name = 'HttpError'
  constructor (message: string, readonly status: number = 500) {
    super(message)
  }
}

export class HttpNotFoundError extends HttpError {
  override name = 'HttpNotFoundError'
  constructor (message: string) { super(message, 404) }
}

export class HttpMethodNotAllowedError extends HttpError {
  override name = 'HttpMethodNotAllowedError'
  constructor (message: string) { super(message, 405) }
}

export class HttpBodyTooLargeError extends HttpError {
  override name = 'HttpBodyTooLargeError'
  constructor (message: string) { super(message, 413) }
}

export class HttpBadJsonError extends HttpError {
  override name = 'HttpBadJsonError'
  constructor (message: string) { super(message, 400) }
}

export class HttpBadRequestError extends HttpError {
  override name = 'HttpBadRequestError'
  constructor (message: string) { super(message, 400) }
}

/** The listen address is taken (usually by another node). */
export class HttpAddressInUseError extends HttpError {
  override name = 'HttpAddressInUseError'
  constructor (message: string) { super(message, 500) }
}
