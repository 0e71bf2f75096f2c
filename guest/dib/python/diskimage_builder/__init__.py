# diskimage_builder (vmdib shim): the few Python names upstream element scripts import from DIB's package.
